"""The ML lifecycle as parameterized notebooks: papermill run folders, MLflow tracking and registry.

Modules:

- `mlops_nb.data`: Where data comes from (bundled datasets, files, folders, globs, fsspec URIs), read in bounded chunks into a snapshot with a content-hashed data version; the ingest stage; the data versions the runs used.
- `mlops_nb.drift`: Data drift per feature between a reference (the champion's training snapshot, or its saved profile) and a current batch: effect sizes that decide, p-values beside them, a dataset-level summary and plots.
- `mlops_nb.monitor`: A batch against the champion's training data: data drift, training/serving skew, prediction drift, performance when labels are there, control charts over the history, and the retraining trigger.
- `mlops_nb.replay`: The retraining loop replayed over a time-ordered dataset: each batch scored by the current model, monitored, labelled, and perhaps retrained on; three policies side by side.
- `mlops_nb.spc`: Statistical process control over a series (the history of monitor runs or time windows): a Shewhart individuals chart with the Western Electric rules, EWMA and CUSUM charts, limits set from a baseline window.
- `mlops_nb.sweep`: Many settings at once: the shared stages once, then one child run per combination, on a Dask cluster or one after another; the combinations ranked, and the best candidate through the usual gate.
- `mlops_nb.validate`: The data contract: infer a schema from the training snapshot, check any batch against a schema (the champion's), and report anomalies, each with a severity, in lines a person can act on."""

__version__ = "0.1.0"
