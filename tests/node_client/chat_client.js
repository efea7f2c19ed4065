#!/usr/bin/env node
// Calls the llmops gateway from Node.js: `llmops.v1.Gateway/Chat` (server
// streaming), then `ChatOnce` (unary) with the same question, and prints ONE
// JSON object on stdout. The stubs are generated at run time from proto/ by
// @grpc/proto-loader, so nothing here is llmops-specific but the .proto files.
//
//   node chat_client.js --addr 127.0.0.1:50065 --key "$(cat .llmops/api-key)" \
//       --question "how often should I oil my bike chain" [--no-cache]
//
// Options (or environment variables):
//   --addr ADDR         LLMOPS_GATEWAY_ADDR   gateway host:port (default 127.0.0.1:50065)
//   --key KEY           LLMOPS_API_KEY        sent as `authorization: Bearer KEY`
//   --key-file PATH     LLMOPS_API_KEY_FILE   read the key from a file (e.g. <data dir>/api-key)
//   --question TEXT     LLMOPS_QUESTION       the user message (or the first positional argument)
//   --model ALIAS, --collection NAME, --top-k N, --max-tokens N, --filter K=V (repeatable)
//   --no-cache          Chat neither reads nor writes the exact and semantic caches
//   --guardrail-policy NAME  the tenant's guardrail policy to apply (default: "default")
//   --only chat|once    make one of the two calls only (default: both, Chat first)
//   --timeout S         deadline of each call in seconds (default 60)
//   --proto-dir DIR     LLMOPS_PROTO_DIR      include dir of the .proto files (default ../../proto)
//   --tls               TLS with the system roots instead of plaintext
//
// Success (exit 0): {"address", "text", "deltas", "final", "trailers", "once": {"text", "final"}}
//   text: the deltas joined; deltas: how many; final: the ChatFinal (citations, usage,
//   cache, trace_id, model_used, overhead_ms, ...); trailers: Chat's trailing metadata.
// gRPC error (exit 1): {"address", "error": {"rpc", "code", "code_number", "details", "metadata"}}
// Bad usage (exit 2): {"error": {"code": "USAGE", "details"}}
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const DEFAULT_PROTO_DIR = path.resolve(__dirname, '..', '..', 'proto');
const GATEWAY_PROTO = path.join('llmops', 'v1', 'gateway.proto');
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** The generated `llmops.v1.Gateway` client constructor, loaded from `protoDir`. */
function loadGateway(protoDir = process.env.LLMOPS_PROTO_DIR || DEFAULT_PROTO_DIR) {
  const definition = protoLoader.loadSync(GATEWAY_PROTO, {
    ...LOADER_OPTIONS,
    includeDirs: [protoDir],
  });
  return grpc.loadPackageDefinition(definition).llmops.v1.Gateway;
}

function codeName(code) {
  return Object.keys(grpc.status).find((name) => grpc.status[name] === code) || String(code);
}

function metadataObject(metadata) {
  if (!metadata) return {};
  const out = {};
  for (const [key, value] of Object.entries(metadata.getMap())) {
    out[key] = Buffer.isBuffer(value) ? value.toString('base64') : value;
  }
  return out;
}

class RpcError extends Error {
  constructor(rpc, err) {
    super(err.details || err.message);
    this.rpc = rpc;
    this.code = err.code;
    this.details = err.details || err.message;
    this.metadata = err.metadata;
  }
}

class UsageError extends Error {}

function parseArgs(argv, env = process.env) {
  const opts = {
    addr: env.LLMOPS_GATEWAY_ADDR || '127.0.0.1:50065',
    key: env.LLMOPS_API_KEY || '',
    keyFile: env.LLMOPS_API_KEY_FILE || '',
    question: env.LLMOPS_QUESTION || '',
    model: '',
    collection: '',
    topK: 0,
    maxTokens: 0,
    filters: {},
    noCache: false,
    guardrailPolicy: '',
    only: '',
    timeoutS: 60,
    protoDir: env.LLMOPS_PROTO_DIR || DEFAULT_PROTO_DIR,
    tls: false,
  };
  const positional = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    let [flag, inline] = arg.startsWith('--') && arg.includes('=')
      ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)]
      : [arg, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) throw new UsageError(`${flag} needs a value`);
      return argv[++i];
    };
    switch (flag) {
      case '--addr': opts.addr = value(); break;
      case '--key': opts.key = value(); break;
      case '--key-file': opts.keyFile = value(); break;
      case '--question': opts.question = value(); break;
      case '--model': opts.model = value(); break;
      case '--collection': opts.collection = value(); break;
      case '--top-k': opts.topK = parseInt(value(), 10); break;
      case '--max-tokens': opts.maxTokens = parseInt(value(), 10); break;
      case '--filter': {
        const kv = value();
        const eq = kv.indexOf('=');
        if (eq <= 0) throw new UsageError(`--filter wants KEY=VALUE, got ${kv}`);
        opts.filters[kv.slice(0, eq)] = kv.slice(eq + 1);
        break;
      }
      case '--no-cache': opts.noCache = true; break;
      case '--guardrail-policy': opts.guardrailPolicy = value(); break;
      case '--only': opts.only = value(); break;
      case '--timeout': opts.timeoutS = Number(value()); break;
      case '--proto-dir': opts.protoDir = value(); break;
      case '--tls': opts.tls = true; break;
      case '-h':
      case '--help': throw new UsageError('see the header of chat_client.js for the options');
      default:
        if (flag.startsWith('--')) throw new UsageError(`unknown option ${flag}`);
        positional.push(arg);
    }
  }
  if (!opts.question && positional.length) opts.question = positional.join(' ');
  if (!opts.key && opts.keyFile) opts.key = fs.readFileSync(opts.keyFile, 'utf8').trim();
  if (!opts.question) throw new UsageError('no question (--question, LLMOPS_QUESTION or an argument)');
  if (!opts.key) throw new UsageError('no API key (--key, --key-file, LLMOPS_API_KEY)');
  if (!['', 'chat', 'once'].includes(opts.only)) throw new UsageError('--only is chat or once');
  if (!(opts.timeoutS > 0)) throw new UsageError('--timeout must be a positive number');
  return opts;
}

function buildRequest(opts, noCache) {
  return {
    messages: [{ role: 'user', content: opts.question }],
    collection: opts.collection,
    filters: opts.filters,
    model: opts.model,
    params: { max_tokens: opts.maxTokens },
    retrieval: { disabled: false, top_k: opts.topK, mode: 'SEARCH_MODE_OPTION_UNSPECIFIED' },
    cache: { no_exact: noCache, no_semantic: noCache },
    guardrail_policy: opts.guardrailPolicy,
  };
}

function callOptions(timeoutS) {
  return { deadline: new Date(Date.now() + timeoutS * 1000) };
}

/** Server streaming: the deltas in order, then exactly one final message. */
function chat(client, metadata, request, timeoutS) {
  return new Promise((resolve, reject) => {
    const pieces = [];
    let final = null;
    let outOfOrder = 0;
    let failed = false;
    const call = client.Chat(request, metadata, callOptions(timeoutS));
    call.on('data', (response) => {
      if (response.event === 'delta') {
        if (final !== null) outOfOrder++;
        pieces.push(response.delta.text);
      } else if (response.event === 'final') {
        if (final !== null) outOfOrder++;
        final = response.final;
      }
    });
    call.on('error', (err) => {
      failed = true;
      reject(new RpcError('Chat', err));
    });
    // Resolve once both happened: every message read ('end') and the OK status with trailers.
    let ended = false;
    let okStatus = null;
    const settle = () => {
      if (failed || !ended || okStatus === null) return;
      resolve({
        text: pieces.join(''),
        deltas: pieces.length,
        pieces,
        final,
        events_after_final: outOfOrder,
        trailers: metadataObject(okStatus.metadata),
      });
    };
    call.on('end', () => {
      ended = true;
      settle();
    });
    call.on('status', (status) => {
      if (status.code !== grpc.status.OK) return; // 'error' reports it
      okStatus = status;
      settle();
    });
  });
}

function chatOnce(client, metadata, request, timeoutS) {
  return new Promise((resolve, reject) => {
    client.ChatOnce(request, metadata, callOptions(timeoutS), (err, reply) => {
      if (err) reject(new RpcError('ChatOnce', err));
      else resolve({ text: reply.text, final: reply.final });
    });
  });
}

async function run(opts) {
  const Gateway = loadGateway(opts.protoDir);
  const credentials = opts.tls ? grpc.credentials.createSsl() : grpc.credentials.createInsecure();
  const client = new Gateway(opts.addr, credentials);
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${opts.key}`);
  const out = { address: opts.addr };
  try {
    if (opts.only !== 'once') {
      Object.assign(out, await chat(client, metadata, buildRequest(opts, opts.noCache), opts.timeoutS));
    }
    if (opts.only !== 'chat') {
      out.once = await chatOnce(client, metadata, buildRequest(opts, false), opts.timeoutS);
    }
    return out;
  } finally {
    client.close();
  }
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stdout.write(JSON.stringify({ error: { code: 'USAGE', details: err.message } }) + '\n');
    return 2;
  }
  try {
    const out = await run(opts);
    process.stdout.write(JSON.stringify(out) + '\n');
    return 0;
  } catch (err) {
    if (!(err instanceof RpcError)) throw err;
    const error = {
      rpc: err.rpc,
      code: codeName(err.code),
      code_number: err.code,
      details: err.details,
      metadata: metadataObject(err.metadata),
    };
    process.stdout.write(JSON.stringify({ address: opts.addr, error }) + '\n');
    return 1;
  }
}

module.exports = { loadGateway, parseArgs, buildRequest, chat, chatOnce, run, LOADER_OPTIONS };

if (require.main === module) {
  main().then(
    (code) => { process.exitCode = code; },
    (err) => {
      process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
      process.exitCode = 3;
    },
  );
}
