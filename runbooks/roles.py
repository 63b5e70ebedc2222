"""Role names runbooks and contacts may use, from the seed plans (000 §3.1.1, §4.1.2, §6.3.1)."""

ROLES: dict[str, str] = {
    "commander_in_chief": "Commander-in-chief (general manager): overall coordination, final decisions",
    "scenario_lead": "Scenario lead (deputy GM): owns the plan for one scenario",
    "on_site_commander": "On-site commander (business-line director): runs the response in their area",
    "duty_manager": "Duty manager: schedules, coordinates, handles emergencies",
    "senior_agent": "Senior agent: complex cases",
    "junior_agent": "Junior agent: routine contacts",
    "technical_support": "Technical Support: keeps systems running, restores them",
    "data_analyst": "Data analyst",
    "crisis_management": "Crisis management group (department heads)",
    "customer_service": "Customer Service: receives enquiries and complaints; first to know",
    "marketing": "Marketing: publicity; tells customers where else to go",
    "logistics": "Logistics / Support: equipment, supplies and the reserve of staff",
    "reserve_staff": "Reserve staff kept by Logistics",
    "product_safety": "Product Safety",
    "administration": "Administration: keeps internal contact working",
    "information_coordinator": "Information coordinator: internal contact during the emergency",
}

#: The command roles (seed 000 §3.1.1): who decides for a runbook. An approval gate that names no
#: approvers (and no escalate_to) asks the ones its runbook declares (tasks.approval).
COMMAND_ROLES: tuple[str, ...] = ("commander_in_chief", "scenario_lead", "on_site_commander")
