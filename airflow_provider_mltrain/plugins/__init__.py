"""The Airflow UI plugin: run history pages and their JSON API, mounted at ``/mltrain``."""
