"""Mail: outgoing messages through delivery providers, incoming messages parsed into one hook."""
