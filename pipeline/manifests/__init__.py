"""Patient-level split manifests (MONAI datalist JSON) and dataset adapters."""
