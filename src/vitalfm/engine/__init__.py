"""Training and forecasting engine shared by every model family."""
