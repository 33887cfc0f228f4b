"""Write explain/data/calibration.jsonl: multiple-choice questions from public facts (seeded)."""
import json, random
CAPITALS = """Afghanistan:Kabul;Albania:Tirana;Algeria:Algiers;Andorra:Andorra la Vella;Angola:Luanda;Argentina:Buenos Aires;Armenia:Yerevan;Australia:Canberra;Austria:Vienna;Azerbaijan:Baku;Bahamas:Nassau;Bahrain:Manama;Bangladesh:Dhaka;Barbados:Bridgetown;Belarus:Minsk;Belgium:Brussels;Belize:Belmopan;Benin:Porto-Novo;Bhutan:Thimphu;Bolivia:Sucre;Botswana:Gaborone;Brazil:Brasilia;Bulgaria:Sofia;Burkina Faso:Ouagadougou;Burundi:Gitega;Cambodia:Phnom Penh;Cameroon:Yaounde;Canada:Ottawa;Chad:N'Djamena;Chile:Santiago;China:Beijing;Colombia:Bogota;Costa Rica:San Jose;Croatia:Zagreb;Cuba:Havana;Cyprus:Nicosia;Czech Republic:Prague;Denmark:Copenhagen;Djibouti:Djibouti;Dominican Republic:Santo Domingo;Ecuador:Quito;Egypt:Cairo;El Salvador:San Salvador;Eritrea:Asmara;Estonia:Tallinn;Ethiopia:Addis Ababa;Fiji:Suva;Finland:Helsinki;France:Paris;Gabon:Libreville;Georgia:Tbilisi;Germany:Berlin;Ghana:Accra;Greece:Athens;Guatemala:Guatemala City;Guinea:Conakry;Guyana:Georgetown;Haiti:Port-au-Prince;Honduras:Tegucigalpa;Hungary:Budapest;Iceland:Reykjavik;India:New Delhi;Indonesia:Jakarta;Iran:Tehran;Iraq:Baghdad;Ireland:Dublin;Israel:Jerusalem;Italy:Rome;Jamaica:Kingston;Japan:Tokyo;Jordan:Amman;Kazakhstan:Astana;Kenya:Nairobi;Kuwait:Kuwait City;Kyrgyzstan:Bishkek;Laos:Vientiane;Latvia:Riga;Lebanon:Beirut;Lesotho:Maseru;Liberia:Monrovia;Libya:Tripoli;Liechtenstein:Vaduz;Lithuania:Vilnius;Luxembourg:Luxembourg;Madagascar:Antananarivo;Malawi:Lilongwe;Malaysia:Kuala Lumpur;Maldives:Male;Mali:Bamako;Malta:Valletta;Mauritania:Nouakchott;Mauritius:Port Louis;Mexico:Mexico City;Moldova:Chisinau;Monaco:Monaco;Mongolia:Ulaanbaatar;Montenegro:Podgorica;Morocco:Rabat;Mozambique:Maputo;Myanmar:Naypyidaw;Namibia:Windhoek;Nepal:Kathmandu;Netherlands:Amsterdam;New Zealand:Wellington;Nicaragua:Managua;Niger:Niamey;Nigeria:Abuja;North Korea:Pyongyang;North Macedonia:Skopje;Norway:Oslo;Oman:Muscat;Pakistan:Islamabad;Panama:Panama City;Paraguay:Asuncion;Peru:Lima;Philippines:Manila;Poland:Warsaw;Portugal:Lisbon;Qatar:Doha;Romania:Bucharest;Russia:Moscow;Rwanda:Kigali;Saudi Arabia:Riyadh;Senegal:Dakar;Serbia:Belgrade;Singapore:Singapore;Slovakia:Bratislava;Slovenia:Ljubljana;Somalia:Mogadishu;South Africa:Pretoria;South Korea:Seoul;Spain:Madrid;Sri Lanka:Colombo;Sudan:Khartoum;Suriname:Paramaribo;Sweden:Stockholm;Switzerland:Bern;Syria:Damascus;Taiwan:Taipei;Tajikistan:Dushanbe;Tanzania:Dodoma;Thailand:Bangkok;Togo:Lome;Tunisia:Tunis;Turkey:Ankara;Turkmenistan:Ashgabat;Uganda:Kampala;Ukraine:Kyiv;United Arab Emirates:Abu Dhabi;United Kingdom:London;United States:Washington;Uruguay:Montevideo;Uzbekistan:Tashkent;Venezuela:Caracas;Vietnam:Hanoi;Yemen:Sanaa;Zambia:Lusaka;Zimbabwe:Harare"""
pairs = [p.split(":") for p in CAPITALS.split(";")]
rng = random.Random(7)
rows = []
cities = [c for _, c in pairs]
for country, city in pairs:
    wrong = rng.sample([c for c in cities if c != city], 3)
    options = wrong + [city]
    rng.shuffle(options)
    rows.append({"set": "capitals", "question": f"What is the capital of {country}?",
                 "options": options, "answer": options.index(city)})
for _ in range(100):
    op = rng.choice(["+", "-", "*"])
    if op == "*":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        ans = a * b
    else:
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        ans = a + b if op == "+" else a - b
    wrong = set()
    while len(wrong) < 3:
        w = ans + rng.choice([-10, -2, -1, 1, 2, 10, rng.randint(-15, 15)])
        if w != ans:
            wrong.add(w)
    options = [str(x) for x in list(wrong) + [ans]]
    rng.shuffle(options)
    word = {"+": "plus", "-": "minus", "*": "times"}[op]
    rows.append({"set": "arithmetic", "question": f"What is {a} {word} {b}?",
                 "options": options, "answer": options.index(str(ans))})
with open(__file__.replace("make_calibration.py", "calibration.jsonl"), "w") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
print(len(rows))
