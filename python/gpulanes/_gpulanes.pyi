"""Type stubs of the native module (private to the package: use ``gpulanes``)."""

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

_Pair = Tuple[np.ndarray, Optional[npt.NDArray[np.bool_]]]

class GpuError(RuntimeError): ...
class NoAdapterError(GpuError): ...
class DeviceLostError(GpuError): ...
class GpuOutOfMemoryError(GpuError): ...
class QueueFullError(RuntimeError): ...

class Engine:
    def __init__(self) -> None: ...
    def info(self) -> Dict[str, Any]: ...
    def reduce(
        self,
        x: Any,
        ops: Sequence[str],
        nan: str = "propagate",
        partition_size: Optional[int] = None,
        offsets: Optional[npt.NDArray[np.int64]] = None,
    ) -> List[_Pair]: ...
    def reduce_by_key(
        self, x: Any, keys: Any, ops: Sequence[str], nan: str = "propagate", composite: bool = False
    ) -> Tuple[Any, List[_Pair]]: ...
    def partial_by_key(self, x: Any, keys: Any, op: str, composite: bool = False) -> Tuple[Any, List[bytes]]: ...
    def partial(
        self,
        x: Any,
        op: str,
        partition_size: Optional[int] = None,
        offsets: Optional[npt.NDArray[np.int64]] = None,
    ) -> Union[bytes, List[bytes]]: ...
    def time_sum(self, x: Any, runs: int) -> List[float]: ...
    def input_address(self, x: Any, partitioned: bool = False) -> Tuple[int, bool]: ...

class CancelToken:
    def cancel(self) -> None: ...

class Lanes:
    def __init__(self, engine: Engine) -> None: ...
    def realtime(
        self,
        x: Any,
        op: str,
        future: Any,
        nan: str = "propagate",
        timeout: Optional[float] = None,
        composite: bool = False,
    ) -> CancelToken: ...
    def batch(
        self,
        x: Any,
        op: str,
        future: Any,
        nan: str = "propagate",
        partition_size: Optional[int] = None,
        offsets: Optional[npt.NDArray[np.int64]] = None,
    ) -> CancelToken: ...
    def keyed(
        self,
        keys: Any,
        x: Any,
        ops: Sequence[str],
        future: Any,
        realtime: bool,
        nan: str = "propagate",
        timeout: Optional[float] = None,
    ) -> CancelToken: ...

def merge(states: Sequence[bytes]) -> bytes: ...
def finalize(state: bytes, op: Optional[str] = None, nan: str = "propagate") -> _Pair: ...
def merge_keyed_states(parts: List[Tuple[List[np.ndarray], List[bytes]]]) -> Tuple[List[np.ndarray], List[bytes]]: ...
def finalize_keyed_states(states: List[bytes], op: Optional[str] = None, nan: str = "propagate") -> _Pair: ...
def state_info(state: bytes) -> Dict[str, Any]: ...
