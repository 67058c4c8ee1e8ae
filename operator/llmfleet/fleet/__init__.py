"""The fleet's rules, pure: how many replicas and where, what a child is called, what one replica can do.

Every other room reads these rules from here and nowhere else: the renderers (``render``), the operator's plan
and status (``reconcile``), the autoscaler (``autoscale``) and the fleet simulator (``sim``). Nothing in this
package does I/O or reads a clock; it imports only ``llmfleet.api`` (an import contract holds it to that).

- ``names``: labels, components and the names of every child an LLMDeployment owns.
- ``pools``: the initial size, the split over the spot and on-demand pools, the spot stand-in rule.
- ``pods``: what a pod's fields say (ready, pending, terminating, its pool, its age).
- ``reclaim``: which node signal is a reclaim notice, which engine pods drain for it, the replacing rule.
- ``capacity``: one replica's performance model and the token capacity the autoscaler sizes with.
- ``scale``: what the autoscaler hands a reconcile.
"""
