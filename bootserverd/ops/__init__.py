"""Operations: logging, metrics, privileges, sd_notify, and the rules all services share (rate-limited
logs, per-client counts, finished transfers). Imports only the standard library, Twisted and prometheus-client."""
