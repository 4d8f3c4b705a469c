"""Model families behind one forecasting interface (see base.py)."""
