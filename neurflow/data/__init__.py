"""Data files shipped with the package (see neurflow/classes.py): the ImageNet-1k synset ids."""
