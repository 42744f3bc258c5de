"""The mlplat policy pack (``policies/``), importable as ``mlplat_policies``.

``rules`` holds the pure validators and the catalog; ``__main__`` adapts them to
Pulumi CrossGuard. Nothing here imports mlplat.
"""
