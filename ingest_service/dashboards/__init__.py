"""Dashboards as code: Kibana and OpenSearch Dashboards saved objects rendered from the schema
table (``render``), checked in under ``kibana_objects/``, and imported through the Saved
Objects API (``client``); ``cli`` adds ``flow-ingest dashboards install|export``."""
