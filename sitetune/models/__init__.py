"""models: built by a later issue (see README, Status)."""
