"""Fixture builders shared by the tests. Everything here is made on the fly and cached between runs under
`$QUANTKIT_TEST_CACHE` (default `~/.cache/quantkit-tests`), keyed by a version so a change rebuilds it."""
