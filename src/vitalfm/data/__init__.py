"""Data preparation after extraction: regular grid per ICU stay, patient-level splits and
forecasting windows."""
