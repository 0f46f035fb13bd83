"""Operations: logging, metrics, privileges, sd_notify, rate-limited logs.
Imports only the standard library, Twisted and prometheus-client."""
