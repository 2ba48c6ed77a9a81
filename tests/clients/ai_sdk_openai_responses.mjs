// The Vercel AI SDK's openai provider (the Responses API, `openai.responses(...)`) against the
// gateway, as an app would use it.
// Usage: node ai_sdk_openai_responses.mjs stream|tools   (LLMAPI_URL and LLMAPI_KEY in the environment)
// Prints one JSON line with what the SDK got.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const openai = createOpenAI({
  baseURL: `${process.env.LLMAPI_URL}/v1`,
  apiKey: process.env.LLMAPI_KEY,
});
const model = openai.responses(process.env.LLMAPI_MODEL ?? "fake-llm");

if (process.argv[2] === "stream") {
  const result = streamText({ model, prompt: "What is the capital of France?", maxOutputTokens: 100 });
  const parts = [];
  for await (const part of result.textStream) parts.push(part);
  console.log(
    JSON.stringify({
      parts,
      text: await result.text,
      finishReason: await result.finishReason,
      usage: await result.usage,
      responseId: (await result.providerMetadata)?.openai?.responseId ?? null,
    }),
  );
} else {
  const calls = [];
  const result = await generateText({
    model,
    prompt: "What is the weather in Paris?",
    maxOutputTokens: 100,
    tools: {
      get_weather: tool({
        description: "The weather in a city.",
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => {
          calls.push(city);
          return `18 C and sunny in ${city}`;
        },
      }),
    },
    stopWhen: stepCountIs(3),
  });
  console.log(
    JSON.stringify({
      calls,
      text: result.text,
      steps: result.steps.length,
      finishReason: result.finishReason,
      usage: result.totalUsage,
    }),
  );
}
