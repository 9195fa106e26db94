// A Node.js client of CJ mesh built only from the .proto files: @grpc/grpc-js + @grpc/proto-loader.
//
// Uploads essays (client stream), submits a guest batch (it creates no assignment, so it leaves
// nothing behind that it cannot clean up), watches it to the end (server stream), reads the results,
// and reads the field violations of a request that breaks the contract. Prints one JSON object.
//
// Environment: CONTENT_ADDRESS, CJ_ADDRESS (host:port), PROTO_DIRS (include dirs, ':'-separated:
// protos/, third_party/ and a folder holding google/rpc/*.proto).

"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const includeDirs = process.env.PROTO_DIRS.split(":");
const definition = protoLoader.loadSync(
  ["huleedu/content/v1/content.proto", "huleedu/cj/v1/assessment.proto"],
  { includeDirs, keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
);
const api = grpc.loadPackageDefinition(definition).huleedu;
const content = new api.content.v1.ContentService(process.env.CONTENT_ADDRESS, grpc.credentials.createInsecure());
const assessment = new api.cj.v1.AssessmentService(process.env.CJ_ADDRESS, grpc.credentials.createInsecure());

// The rich error model: google.rpc.Status in the `grpc-status-details-bin` trailer.
const errorTypes = new protobuf.Root();
errorTypes.resolvePath = (_origin, target) => {
  for (const dir of includeDirs) {
    const candidate = path.join(dir, target);
    if (fs.existsSync(candidate)) return candidate;
  }
  return target;
};
errorTypes.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const Status = errorTypes.lookupType("google.rpc.Status");
const BadRequest = errorTypes.lookupType("google.rpc.BadRequest");

function fieldViolations(error) {
  const [raw] = error.metadata.get("grpc-status-details-bin");
  const status = Status.decode(raw);
  const badRequest = status.details.find((d) => d.type_url.endsWith("/google.rpc.BadRequest"));
  return BadRequest.decode(badRequest.value).field_violations.map((v) => ({ field: v.field, description: v.description }));
}

function unary(client, method, request) {
  return new Promise((resolve, reject) => client[method](request, (error, response) => (error ? reject(error) : resolve(response))));
}

function upload(text, filename) {
  const bytes = Buffer.from(text, "utf8");
  return new Promise((resolve, reject) => {
    const call = content.Upload((error, response) => (error ? reject(error) : resolve(response)));
    call.write({
      header: {
        kind: "CONTENT_KIND_ESSAY_TEXT",
        content_type: "text/plain; charset=utf-8",
        filename,
        declared_size: String(bytes.length),
        sha256: crypto.createHash("sha256").update(bytes).digest("hex"),
      },
    });
    for (let start = 0; start < bytes.length; start += 64 * 1024) call.write({ chunk: bytes.subarray(start, start + 64 * 1024) });
    call.end();
  });
}

function watch(batchId) {
  return new Promise((resolve, reject) => {
    const states = [];
    const call = assessment.WatchBatch({ batch_id: batchId });
    call.on("data", (update) => {
      if (states[states.length - 1] !== update.batch.state) states.push(update.batch.state);
    });
    call.on("error", reject);
    call.on("end", () => resolve(states));
  });
}

async function main() {
  const texts = [
    "Ett kort svar om en resa. Den var lång och kall, men vi kom fram.",
    "A journey that changed me began at dawn. We walked for hours, talked about everything, and by the evening I understood my grandmother better than ever before.",
    "My trip. It was good. I liked it.",
    "When the train stopped in the middle of nowhere, nobody knew what to do; the delay turned into a night of stories, and those stories are why I now want to study history.",
  ];
  const uploads = [];
  for (const [i, text] of texts.entries()) uploads.push(await upload(text, `node-essay-${i}.txt`));

  const submitted = await unary(assessment, "SubmitBatch", {
    request_id: crypto.randomUUID(),
    batch_label: "from node",
    essays: uploads.map((u, i) => ({ essay_id: `node-${i}`, text_storage_id: u.storage_id })),
    comparison_budget: 8,
  });
  const states = await watch(submitted.batch.batch_id);
  const { results } = await unary(assessment, "GetBatchResults", { batch_id: submitted.batch.batch_id });

  let violations = null;
  try {
    await unary(assessment, "SubmitBatch", {
      request_id: crypto.randomUUID(),
      batch_label: "broken on purpose",
      essays: [
        { essay_id: "a", text_storage_id: uploads[0].storage_id },
        { essay_id: "b", text_storage_id: crypto.createHash("sha256").update("b").digest("hex") },
      ],
    });
  } catch (error) {
    violations = { code: grpc.status[error.code], fields: fieldViolations(error) };
  }

  console.log(JSON.stringify({
    storage_ids: uploads.map((u) => u.storage_id),
    batch_id: submitted.batch.batch_id,
    states,
    ranked: results.essays.map((e) => ({ essay_id: e.essay_id, rank: e.rank, score: e.score })),
    comparisons_done: results.batch.progress.comparisons_done,
    violations,
  }));
  content.close();
  assessment.close();
}

main().catch((error) => {
  console.error(`node client failed: ${error.message}`);
  process.exit(1);
});
