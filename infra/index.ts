// Pulumi entry point (Pulumi.yaml `main`). Pulumi runs an exported function and publishes the
// properties of what it returns as the stack outputs.
import { createStack } from "./stack";

export = () => createStack();
