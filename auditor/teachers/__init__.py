"""The unsupervised PCA → diagonal-GMM teacher: the module, fitting it, and searching rank, K and τ."""
