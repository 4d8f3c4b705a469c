"""Model families behind one forecasting interface (:mod:`.base`), each registered with its
traits in :mod:`.registry`: Chronos and MOIRAI (packages with one class per variant), Lag-Llama,
and the from-scratch baselines (:mod:`.baselines`)."""
