"""Grafana dashboards for Clary AI, generated with grafanalib.

``dashboards.build.all_dashboards()`` returns the 13 dashboards (Usage,
Performance, License and Feedback for each tier, plus the Overview);
``clary-dashboards build`` writes them to ``provisioning/dashboards/``.
"""
