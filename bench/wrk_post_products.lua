-- POSTs a new product on every request, each with a sku of its own, and prints wrk's summary as
-- one JSON line. The first script argument, a run number, picks the sku's two letters (XA to
-- ZZ, which no other writer of the benchmark uses), so that no two runs write the same sku.
dofile("bench/wrk_summary.lua")

local letters = "AB"
local counter = 0

function init(args)
  local run = tonumber(args[1] or "0") % 78
  letters = string.char(88 + math.floor(run / 26)) .. string.char(65 + run % 26)
end

function request()
  counter = counter + 1
  local sku = string.format("%s-%04d-%03d", letters, math.floor(counter / 1000) % 10000, counter % 1000)
  local body = '{"name":"Bench widget","description":"Written by the benchmark",'
    .. '"price":"19.99","category_id":1,"sku":"' .. sku .. '"}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
