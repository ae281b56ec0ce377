"""Serving: BentoML service, request/response schemas, batch scoring and feature lookup."""
