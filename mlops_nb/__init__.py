"""The ML lifecycle as parameterized notebooks: papermill run folders, MLflow tracking and registry.

Modules:

- `mlops_nb.data`: Where data comes from (bundled datasets, files, folders, globs, fsspec URIs), read in bounded chunks into a snapshot with a content-hashed data version; the ingest stage; the data versions the runs used.
- `mlops_nb.validate`: The data contract: infer a schema from the training snapshot, check any batch against a schema (the champion's), and report anomalies, each with a severity, in lines a person can act on."""

__version__ = "0.1.0"
