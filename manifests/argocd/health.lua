-- Argo CD health for llmfleet.io/LLMDeployment, from the status the operator writes
-- (llmfleet.api.conditions): Degraded when the spec cannot be applied, Suspended when scaled to zero,
-- Progressing until the operator has observed this generation and every child is rolled out and ready,
-- Healthy after. Installed as resource.customizations.health.llmfleet.io_LLMDeployment (argocd-cm.yaml).
local hs = {status = "Progressing", message = "Waiting for the llmfleet operator to observe the spec"}
if obj.status == nil then
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if observed == nil or (generation ~= nil and observed < generation) then
  return hs
end
local conditions = {}
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    conditions[c.type] = c
  end
end
local function describe(c)
  local reason = c.reason or c.type
  if c.message ~= nil and c.message ~= "" then
    return reason .. ": " .. c.message
  end
  return reason
end
local degraded = conditions["Degraded"]
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded)
  return hs
end
local ready = conditions["Ready"]
if ready ~= nil and ready.status == "True" and ready.reason == "ScaledToZero" then
  hs.status = "Suspended"
  hs.message = describe(ready)
  return hs
end
local progressing = conditions["Progressing"]
if progressing ~= nil and progressing.status == "True" then
  hs.message = describe(progressing)
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end
if ready ~= nil then
  hs.message = describe(ready)
end
return hs
