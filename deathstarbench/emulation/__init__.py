"""Local emulation of the DeathStarBench social network (the start of it).

- `callgraph`: the services and, per request type, who calls whom (sequential stages of parallel
  calls, as DeathStarBench's C++ services issue them), with the 60/30/10 request mix.
- `socialgraph`: the follow graph loader (socfb-Reed98.edges, 962 users), which sets the
  fan-out of a compose (one home-timeline write per follower).

Nothing here starts a process yet.
"""
