"""An agent with two tools and `SeedLockMiddleware`; JSON logs on stderr.

Every model call of the agent loop is sent with the lock's seed and sampling
parameters, and logged (``seedlock.call``, plus ``seedlock.fingerprint_changed``
/ ``seedlock.output_drift`` when something changed) with the agent's context:
``langgraph_node``, ``langgraph_step``, ``thread_id``, ``agent_step``.

The model is scripted, honestly: the embedded local model (SmolLM2) makes no
tool calls, and CI has no OpenAI. `ScriptedToolModel` calls ``get_weather``,
then ``get_time``, then answers, and reports a ``system_fingerprint`` like a
provider; ``--upgrade`` makes it behave like a provider that shipped a new
backend. With a real provider, only the model line changes::

    agent = create_agent(ChatOpenAI(model="gpt-4o-mini"), tools, middleware=[seedlock])

    python examples/agent.py [--store sqlite:///baselines.db] [--thread ID] [--upgrade]
"""

from __future__ import annotations

import argparse
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool

from langchain_seedlock import SeedLock, SeedLockMiddleware, configure_logging


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"sunny in {city}"


@tool
def get_time(city: str) -> str:
    """Local time in a city."""
    return f"12:00 in {city}"


class ScriptedToolModel(BaseChatModel):
    """Stands in for a tool-calling provider (see the module docstring)."""

    model_name: str = "scripted-tools"
    upgraded: bool = False

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=tools, **kwargs)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        results = [m.content for m in messages if isinstance(m, ToolMessage)]
        if len(results) < 2:  # steps 1 and 2: call a tool
            name = ("get_weather", "get_time")[len(results)]
            call = {"name": name, "args": {"city": "Paris"}, "id": f"call_{len(results)}"}
            message = AIMessage("", tool_calls=[call])
        elif self.upgraded:  # step 3, new backend: another wording
            message = AIMessage(f"Paris is {results[0]} at {results[1]} (seed {kw['seed']}).")
        else:  # step 3: answer
            message = AIMessage(f"In Paris: {results[0]}, {results[1]} (seed {kw['seed']}).")
        message.response_metadata = {
            "system_fingerprint": "fp_scripted_2" if self.upgraded else "fp_scripted_1",
            "model_name": self.model_name,
        }
        return ChatResult(generations=[ChatGeneration(message=message)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="memory://", help="baseline store URL")
    parser.add_argument("--thread", default="demo-1", help="the conversation's thread_id")
    parser.add_argument("--upgrade", action="store_true", help="simulate a backend change")
    args = parser.parse_args()

    configure_logging(json=True, level="debug")  # JSON lines on stderr; debug shows seedlock.call
    seedlock = SeedLockMiddleware(SeedLock(seed=123, temperature=0.2), store=args.store)
    agent = create_agent(
        ScriptedToolModel(upgraded=args.upgrade),
        [get_weather, get_time],
        middleware=[seedlock],
    )
    result = agent.invoke(
        {"messages": [{"role": "user", "content": "Weather and time in Paris?"}]},
        {"configurable": {"thread_id": args.thread}},
    )
    seedlock.close()  # flush the store before exiting
    print(result["messages"][-1].content)


if __name__ == "__main__":
    main()
