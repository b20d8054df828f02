"""The core: plain Python, no Airflow. Workspace, experiments, runs, snapshots, run store."""
