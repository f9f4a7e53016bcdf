// Validates the custom resources of rendered manifests against the CRD schemas compiled into the
// kubernetes-models packages (kubernetes-validate only knows built-in kinds).
// Usage: node validate-crds.mjs FILE...   Prints `ok`/`FAIL KIND/NAME` per custom resource and
// `skip` for other API groups; the helm tests check that every resource is validated by one tool.
// These schemas check types, enums and required fields, not unknown fields (the packages compile
// the CRDs without additionalProperties).
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const models = {
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
  "gateway.networking.k8s.io/v1": "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1",
  "external-secrets.io/v1": "@kubernetes-models/external-secrets/external-secrets.io/v1",
};

let failures = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const obj = doc.toJS();
    if (!obj) continue;
    const id = `${obj.kind}/${obj.metadata?.name}`;
    const module = models[obj.apiVersion];
    if (!module) {
      console.log(`skip ${id} (${obj.apiVersion})`);
      continue;
    }
    const Model = (await import(`${module}/${obj.kind}`))[obj.kind];
    try {
      new Model(obj).validate();
      console.log(`ok   ${id} (${obj.apiVersion})`);
    } catch (err) {
      console.log(`FAIL ${id}: ${err.message}`);
      failures++;
    }
  }
}
process.exit(failures ? 1 : 0);
