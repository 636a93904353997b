"""The offline ranking protocol shared by training (early stopping) and evaluation (gates): holdout splits,
full-catalogue top-k, ranking metrics."""
