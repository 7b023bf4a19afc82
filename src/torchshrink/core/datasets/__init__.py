"""Data sources behind the data references (one module per source).

Each module exposes one ``load_*_data`` function returning a
:class:`~torchshrink.core.databundle.DataBundle`; :mod:`torchshrink.core.data` maps reference
kinds (``digits``, ``mnist1d``, ``npz:``, ``imagefolder:``, ``text:``) onto them. Optional
packages (scikit-learn, mnist1d, Pillow) are imported only inside those functions.

Example:
    >>> from torchshrink.core.datasets.digits import load_digits_data
    >>> load_digits_data(limit=4).num_classes
    10
"""
