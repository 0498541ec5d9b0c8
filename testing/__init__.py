"""Process helpers shared by tests/ and bench/: the real service under uvicorn
(`ServerProcess`), a NATS JetStream cluster and the sink (`nats_cluster`), and the process
basics under both (`processes`). Not part of the installed package."""

from .nats_cluster import NatsCluster, SinkProcess
from .processes import ChildProcess, clean_env, free_port, stop_process_group
from .server import ROOT, UNLIMITED, ServerProcess

__all__ = ["ROOT", "UNLIMITED", "ChildProcess", "NatsCluster", "ServerProcess", "SinkProcess",
           "clean_env", "free_port", "stop_process_group"]
