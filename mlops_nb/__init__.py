"""The ML lifecycle as parameterized notebooks: papermill run folders, MLflow tracking and registry."""

__version__ = '0.1.0'
