"""A vLLM stand-in for ThunderAgent tests (stdlib only, 127.0.0.1): vLLM's OpenAI API (/v1/chat/completions,
/v1/models, /health, from FakeOpenAIServer) plus GET /metrics in vLLM's Prometheus text format, with a KV cache
small enough that ThunderAgent's capacity scheduler ("tr" router) has to queue, pause and resume programs.

What ThunderAgent 0.1.0 reads (ThunderAgent/backend/vllm_metrics.py):
- once at start: `vllm:cache_config_info{block_size="..",num_gpu_blocks="..",...}`: capacity in tokens is
  block_size * num_gpu_blocks; with it the router admits a program only while its estimated tokens plus
  100 per program fit (backend/state.py: BUFFER_PER_PROGRAM), else the program waits, PAUSED, for the
  scheduler to resume it;
- every --metrics-interval: vllm:num_requests_running, vllm:num_requests_waiting, vllm:kv_cache_usage_perc
  and the counters (prefix cache, prompt/generation tokens, preemptions, request_success_total by reason).
  A /metrics that fails marks the backend unhealthy, and an unhealthy backend gets no program.
"""

from __future__ import annotations

import threading

from fake_openai_server import FakeOpenAIServer, Reply

PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


class FakeVLLMServer(FakeOpenAIServer):
    def __init__(self, *, block_size: int = 16, num_gpu_blocks: int = 40, model: str = "fake", **kwargs):
        super().__init__(**kwargs)
        self.block_size = block_size
        self.num_gpu_blocks = num_gpu_blocks
        self.model = model
        self.metrics_reads = 0
        self._usage = {"prompt": 0, "generation": 0, "finished": 0}
        self._usage_lock = threading.Lock()
        self.get_routes["/metrics"] = self._metrics

    @property
    def capacity_tokens(self) -> int:
        return self.block_size * self.num_gpu_blocks

    def _next_reply(self, request: dict) -> Reply:
        reply = super()._next_reply(request)
        messages = (request.get("body") or {}).get("messages") or []
        prompt = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 1
        with self._usage_lock:  # what vLLM's counters would say, give or take the fake's token estimate
            self._usage["prompt"] += prompt
            self._usage["generation"] += len(str(reply.get("content") or "")) // 4 + 1
            self._usage["finished"] += 1
        return reply

    def _metrics(self) -> tuple[str, str]:
        with self._usage_lock:
            self.metrics_reads += 1
            usage = dict(self._usage)
        running = self.in_flight
        # each running request holds one block per 16 tokens; a rough share of the cache is enough here
        kv_usage = min(1.0, running * self.block_size * 4 / self.capacity_tokens)
        labels = f'engine="0",model_name="{self.model}"'
        config = (f'block_size="{self.block_size}",cache_dtype="auto",enable_prefix_caching="True",'
                  f'gpu_memory_utilization="0.9",num_cpu_blocks="0",num_gpu_blocks="{self.num_gpu_blocks}"')
        lines = [
            "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
            "# TYPE vllm:cache_config_info gauge",
            f"vllm:cache_config_info{{{config},engine=\"0\"}} 1.0",
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{labels}}} {float(running)}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{labels}}} 0.0",
            "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{{{labels}}} {kv_usage}",
            "# TYPE vllm:prefix_cache_queries_total counter",
            f"vllm:prefix_cache_queries_total{{{labels}}} {float(usage['prompt'])}",
            "# TYPE vllm:prefix_cache_hits_total counter",
            f"vllm:prefix_cache_hits_total{{{labels}}} 0.0",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{{{labels}}} {float(usage['prompt'])}",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{labels}}} {float(usage['generation'])}",
            "# TYPE vllm:num_preemptions_total counter",
            f"vllm:num_preemptions_total{{{labels}}} 0.0",
            "# TYPE vllm:request_success_total counter",
        ]
        for reason in ("stop", "length", "abort", "error"):
            count = float(usage["finished"]) if reason == "stop" else 0.0
            lines.append(f'vllm:request_success_total{{{labels},finished_reason="{reason}"}} {count}')
        return PROMETHEUS, "\n".join(lines) + "\n"
