"""Dispatcher gRPC servicer: streams a dispatch's events to the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from dispatcher_svc.driver import Dispatcher
from protos import dispatcher_pb2, dispatcher_pb2_grpc


class DispatcherServicer(dispatcher_pb2_grpc.DispatcherServicer):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    async def Dispatch(
        self, request: dispatcher_pb2.DispatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[dispatcher_pb2.DispatchEvents]:
        async for events in self._dispatcher.dispatch(request):
            yield dispatcher_pb2.DispatchEvents(events=events)
