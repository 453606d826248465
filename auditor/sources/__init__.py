"""Everything that turns a user's files into rows: data sets, model sources, teacher sources, tensor
files, checkpoints, hashing and atomic writes. Each kind of input has one seam (an ``interface``
module) and one explicit registry."""
