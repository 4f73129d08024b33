"""Networks for intracranial hemorrhage detection (imports nothing else of ichct)."""
