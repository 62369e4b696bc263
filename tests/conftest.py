"""pytest setup for the renderer tests: hypothesis settings shared by the property tests."""

from hypothesis import HealthCheck, settings

# Rendering is fast, but the first call in a process builds thread pools; a deadline
# would flake on that. Example counts are set per test.
settings.register_profile("ferrymail", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ferrymail")
