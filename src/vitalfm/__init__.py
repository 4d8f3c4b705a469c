"""vitalfm: forecasting ICU sepsis vital signs with time-series foundation models.

Data flows one way: database -> cohort -> vitals -> grid -> splits -> windows
(-> forecasts -> metrics -> tables/figures in later stages).
"""

__version__ = "0.1.0"
