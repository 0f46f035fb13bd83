"""Inventory sources: the InventorySource seam, the YAML file source and the validators
both sources share. Imports model, config.schema and ops; never app, services or ldapsync."""
