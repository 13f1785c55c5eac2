"""`python -m runqscale.agent [FLAGS]`: the node agent (the DaemonSet's command), the same
process as `runqscale agent` without loading the command-line group (click) it never uses."""

from runqscale.agent.daemon_cmd import main

if __name__ == "__main__":
    main()
