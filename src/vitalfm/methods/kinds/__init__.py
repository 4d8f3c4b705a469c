"""One module per method kind; each registers its kind (see :mod:`vitalfm.methods.registry`).

Every module in this package is imported when the registry is first read, so this package
holds method kinds and nothing else. Adding a kind is one new module here (plus its tests).
"""
