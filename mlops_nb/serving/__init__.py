"""The model server: MLflow's scoring protocol, a fast scorer, micro-batching, metrics and the prediction log (the app needs `pip install 'mlops-nb[serve]'`)."""
