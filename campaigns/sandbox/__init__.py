"""Local stand-ins for Twilio and SendGrid (`campaigns sandbox`), for tests, benchmarks and
trying the service without accounts. They speak the providers' HTTP APIs closely enough for
the official SDKs, check credentials, record every message, answer the documented errors for
magic recipients, can add latency, and post signed status callbacks and events back."""
