"""Trainers: LightGBM regressors (tabular), a PyTorch GRU (sequential), LightGBM barrier classifiers."""
