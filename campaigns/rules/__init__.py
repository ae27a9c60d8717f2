"""The rules: pure modules that decide (what is due, what a text means, who may do what,
what may be sent), with no database, provider, network or web. Everything else in
campaigns/ applies them (application modules) or connects them (storage, providers, web)."""
