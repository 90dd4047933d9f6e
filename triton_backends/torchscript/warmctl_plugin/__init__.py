"""Helpers of the ``torchscript`` Python-based backend (model files, torch.compile, metrics).

A package of its own, imported by ``../model.py`` after it puts its folder on ``sys.path``: the
stub imports ``model.py`` by path, and a distinctive package name cannot clash with a module
of the environment.
"""
