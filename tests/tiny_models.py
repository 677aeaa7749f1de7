"""Tiny sizes of every registered model, for tests that run each one (export, spandrel)."""

# Every registered model: (one of its scales, sizes small enough to run in milliseconds); the scales
# vary over the models.
TINY = {
    "din": (4, dict(num_features=8, growth_rate=4, branches=2, blocks=1, rdbs=1)),
    "din-ijcai": (3, dict(num_features=8, growth_rate=4, branches=2, blocks=1, rdbs=1)),
    "din-deblur": (1, dict(num_features=8, growth_rate=4, branches=2, blocks=1, rdbs=1)),
    "din-dehaze": (1, dict(num_features=8, growth_rate=4, branches=1, blocks=1, rdbs=1)),
    "din-derain": (1, dict(num_features=8, growth_rate=4, branches=1, blocks=1, rdbs=1)),
    "defian-s": (2, dict(channels=16, rcabs=1, modules=1)),
    "defian-l": (4, dict(channels=16, rcabs=1, modules=1)),
    "cirn": (3, dict(channels=8, features=8, groups=1, reduction=4)),
    "drfn": (4, dict(channels=16, groups=1, blocks=1)),
}
