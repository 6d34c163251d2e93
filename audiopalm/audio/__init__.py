"""Audio: reading, writing and resampling files (io), and log-mel features (features)."""
