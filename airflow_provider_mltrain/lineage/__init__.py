"""Lineage of runs for Airflow's OpenLineage integration (``apache-airflow-providers-openlineage``)."""
