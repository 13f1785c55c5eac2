"""The DeathStarBench social network: Kubernetes manifests (manifests/, data files only) and the
local emulation (emulation/) that `runqscale validate` will run in cgroups. See README.md."""
