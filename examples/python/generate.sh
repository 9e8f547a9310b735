#!/usr/bin/env bash
# Generates the Python message classes and gRPC stubs from ../../proto into gen/.
# Needs grpcio-tools (see requirements.txt). The generated modules import each
# other as `orderflow.<pkg>.v1.<file>_pb2`, so gen/ must be on sys.path
# (client.py and events.py put it there themselves).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
python=${PYTHON:-python}
if ! "$python" -c 'import grpc_tools' 2>/dev/null; then
  echo "error: grpcio-tools is not installed for '$python'; run: $python -m pip install -r requirements.txt" >&2
  exit 1
fi

rm -rf gen
mkdir -p gen
mapfile -t protos < <(cd ../../proto && find . -name '*.proto' -printf '%P\n' | sort)
if [[ ${#protos[@]} -eq 0 ]]; then
  echo "error: no .proto files found under ../../proto" >&2
  exit 1
fi
# grpc_tools.protoc adds the well-known types (google/protobuf/*.proto) to the
# include path itself.
"$python" -m grpc_tools.protoc -I ../../proto \
  --python_out=gen --grpc_python_out=gen --pyi_out=gen "${protos[@]}"

# Make every generated directory a regular package so that
# `from orderflow.order.v1 import order_pb2` works everywhere.
find gen -mindepth 1 -type d -exec touch {}/__init__.py \;
echo "generated ${#protos[@]} proto files into $(pwd)/gen"
