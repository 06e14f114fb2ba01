"""The monitoring mixin's shared settings: one :class:`~mixin.config.Config` for rules and dashboards.

In the spirit of a Prometheus monitoring mixin's ``_config``: the metric
selector, the cluster label, per-tier thresholds and SLO targets and the
team routing live here once; ``alerts/`` (``python -m alerts.generate``) and
``dashboards/`` (``clary-dashboards``) both read them, and both take the
same ``--config site.yml``, so a panel's threshold and the alert that
watches the same value cannot disagree.

- :mod:`mixin.config`: :class:`Config`, its validation and ``Config.load``;
- :mod:`mixin.slo`: the SLO period, the multiwindow burn-rate table, and the
  names of the SLO recording rules the dashboards read;
- :mod:`mixin.selector`: the selector text parsed into matchers, and the
  :class:`exporter.promql.Scope` the rules and the dashboards are built in.
"""
