"""cvml-teams: posts a training run's start, end and failure cards to a Microsoft Teams
webhook. The plugin object is :data:`cvml_teams.hooks.plugin` (entry point ``teams`` in
group ``cvml``); see the package README."""
