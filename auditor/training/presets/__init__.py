"""``audit reproduce --preset``: the papers' experiments as tables of rows, one module per preset
(:mod:`.mnist`, :mod:`.cifar100`, :mod:`.tinyimagenet`), listed in :mod:`.registry` and run by
:mod:`.run`. Every default and the reason for it: docs/reproduce.md."""
